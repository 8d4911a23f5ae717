"""scikit-survival's documented results, reproduced through our trainers (GUIDE §4).

Protocols exactly as scikit-survival's user guide: breast_cancer with its categorical columns one-hot
encoded by ``sksurv.preprocessing.OneHotEncoder``, 75/25 split with random_state 0, stumps, 100
trees, learning rate 1.0 → C = 0.765; GBSG2 with ``tgrade`` ordinal (I < II < III) and the other
categoricals one-hot encoded, 75/25 split with random_state 20, RSF 1000 trees, min split 10, min
leaf 15, max_features sqrt → C = 0.67453. Our pipeline adds median imputation (no values are missing)
and standardisation (monotone per feature: tree splits are unchanged).
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder, StandardScaler
from sksurv.datasets import load_aids, load_breast_cancer, load_gbsg2
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.ensemble._coxph_loss import coxph_loss, coxph_negative_gradient
from sksurv.preprocessing import OneHotEncoder

from tessera.survival.boosting import CoxPHLoss
from tessera.survival.cv import outer_folds
from tessera.survival.data import make_y
from tessera.survival.metrics import constant_risk, harrell_c
from tessera.survival.tabular import TabularModel


def _ours(X: pd.DataFrame, y) -> tuple[pd.DataFrame, np.ndarray]:
    X = X.copy()
    X.columns = [f"clinical__{c}" for c in X.columns]
    return X, make_y(y[y.dtype.names[1]], y[y.dtype.names[0]])


def test_gbsa_breast_cancer_documented_c_index():
    X, y = load_breast_cancer()
    Xt, yt = _ours(OneHotEncoder().fit_transform(X), y)
    X_train, X_test, y_train, y_test = train_test_split(Xt, yt, test_size=0.25, random_state=0)
    model = TabularModel("gbsa", {"n_estimators": 100, "learning_rate": 1.0, "max_depth": 1, "subsample": 1.0},
                         seed=0).fit(X_train, y_train)
    assert harrell_c(y_test, model.predict_risk(X_test)) == pytest.approx(0.765, abs=0.005)


def test_rsf_gbsg2_documented_c_index():
    X, y = load_gbsg2()
    grade = OrdinalEncoder(categories=[["I", "II", "III"]]).fit_transform(
        X.loc[:, "tgrade"].astype(object).to_numpy()[:, np.newaxis])
    Xt = OneHotEncoder().fit_transform(X.drop("tgrade", axis=1))
    Xt.loc[:, "tgrade"] = grade
    Xt, yt = _ours(Xt, y)
    X_train, X_test, y_train, y_test = train_test_split(Xt, yt, test_size=0.25, random_state=20)
    model = TabularModel("rsf", {"n_estimators": 1000, "min_samples_split": 10, "min_samples_leaf": 15,
                                 "max_features": "sqrt"}, seed=20, n_jobs=2).fit(X_train, y_train)
    assert harrell_c(y_test, model.predict_risk(X_test)) == pytest.approx(0.67453, abs=0.005)


@pytest.mark.parametrize("load", [load_aids, load_breast_cancer], ids=["aids", "breast_cancer"])
def test_coxnet_is_the_model_at_the_requested_penalty(load):
    """Coxnet's warm-started path must end at ``alpha``: started far above the largest useful penalty,
    scikit-survival's deviance-ratio rule cut it while every coefficient was zero (one risk for every
    patient, C = 0.5 on every aids fold). Out-of-fold C equals a direct fit at ``alpha`` on the same folds."""
    X, y = load()
    Xt, yt = _ours(OneHotEncoder().fit_transform(X).astype(float), y)
    alpha = 0.05  # the default
    ours, ref = np.empty(len(yt)), np.empty(len(yt))
    for f in outer_folds(yt, 5, 1, 0):
        model = TabularModel("coxnet", {"alpha": alpha}).fit(Xt.iloc[f.train], yt[f.train])
        assert model.pipeline_.steps[-1][1].alphas_[-1] == pytest.approx(alpha, rel=1e-12)
        ours[f.test] = model.predict_risk(Xt.iloc[f.test])
        direct = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                               CoxnetSurvivalAnalysis(alphas=[alpha], l1_ratio=0.5, max_iter=100000))
        ref[f.test] = direct.fit(Xt.iloc[f.train], yt[f.train]).predict(Xt.iloc[f.test])
        assert not constant_risk(ours[f.test])
        assert harrell_c(yt[f.test], ours[f.test]) == pytest.approx(harrell_c(yt[f.test], ref[f.test]), abs=0.02)
    assert harrell_c(yt, ours) == pytest.approx(harrell_c(yt, ref), abs=0.02)


def test_a_coxnet_path_cut_early_is_refitted_to_the_requested_penalty(monkeypatch):
    """The safety net: should the path start too high again (here the probe reports 50 x alpha as alpha_max,
    the old start), the deviance-ratio rule cuts it at 5.7 x alpha and the fit is repeated in 6 steps."""
    from tessera.survival import tabular

    X, y = load_aids()
    Xt, yt = _ours(OneHotEncoder().fit_transform(X).astype(float), y)
    Xs = StandardScaler().fit_transform(Xt)

    class HighProbe:
        def __init__(self, **kwargs):
            pass

        def fit(self, X, y):
            self.alphas_ = np.array([2.5, 2.4])
            return self

    monkeypatch.setattr(tabular, "CoxnetSurvivalAnalysis", HighProbe)
    model = tabular.CoxnetAtAlpha(0.05).fit(Xs, yt)
    assert model.alpha_max_ == 2.5 and len(model.alphas_) == tabular.COXNET_UNCUT
    assert model.alphas_[-1] == pytest.approx(0.05, rel=1e-12)
    direct = CoxnetSurvivalAnalysis(alphas=[0.05]).fit(Xs, yt)
    np.testing.assert_allclose(model.predict(Xs), direct.predict(Xs), atol=5e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_cox_loss_equals_scikit_survival_kernels(seed):
    """Loss and negative gradient equal scikit-survival's O(n²) kernels, with tied times and large scores."""
    rng = np.random.default_rng(seed)
    n = 400
    time = rng.integers(1, 60, n).astype(float)  # many ties
    event = rng.random(n) < 0.6
    f = rng.normal(0, 4, n)
    y = make_y(time, event)
    loss = CoxPHLoss()
    assert loss(y, f) == pytest.approx(coxph_loss(event.astype(np.uint8), time, f), rel=1e-12)
    np.testing.assert_allclose(loss.gradient(y, f), coxph_negative_gradient(event.astype(np.uint8), time, f),
                               rtol=1e-10, atol=1e-12)
