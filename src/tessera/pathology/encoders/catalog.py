"""The registered encoders: HIPT and the pathology foundation models, each as its reference builds it.

Sources checked for every row (see config/README.md "Encoders" for weights, licence, gating and the
µm/px each model sees): the model cards, TRIDENT's loaders (``trident/patch_encoder_models/load.py``,
``model_zoo/conchv1_5``), timm's model definitions (``vit_large_patch16_224``, ``vit_huge_patch14_224``,
``vit_giant_patch14_dinov2``, ``vit_giant_patch14_reg4_dinov2``, ``vit_large_patch14_reg4_dinov2``, ...)
and the CONCH repository (``conch_ViT-B-16.json``, ``vision_tower.py``). ``n_params`` counts the backbone
as built here (no classification head), checked on the meta device by the tests.

Tile geometry: every model reads tiles at 0.5 µm/px (20×) and its published transform makes the network
input (:class:`~tessera.pathology.encoders.transforms.TileTransform`): e.g. UNI reads 256 px and resizes
to 224 (0.571 µm/px), GigaPath crops the central 224 of 256 (0.5 µm/px), CONCH reads 512 → 448.
"""

from __future__ import annotations

from dataclasses import replace

from tessera.pathology.encoders.registry import Checkpoint, EncoderSpec, register
from tessera.pathology.encoders.transforms import TileTransform
from tessera.pathology.encoders.vit import ViTConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
LUNIT = ((0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

#: 256-px tile → torchvision Resize(224) (bilinear) + CenterCrop(224): UNI, UNI2-h, Kaiko.
RESIZE_224 = TileTransform(resize=224, interpolation="bilinear", crop=224)

CC_BY_NC_ND = "CC-BY-NC-ND 4.0"
HF_INSTITUTIONAL = "Hugging Face access request (institutional e-mail, research use)"
HF_ACCEPT = "Hugging Face: accept the conditions (contact details shared)"

_SWIGLU_G = dict(mlp_ratio=2.66667 * 2, mlp="swiglu_packed", init_values=1e-5)

#: Architectures of the ViT-family encoders, as timm builds them for the reference loaders.
VIT_CONFIGS: dict[str, ViTConfig] = {
    # timm vit_large_patch16_224, init_values=1e-5
    "uni_v1": ViTConfig(1024, 24, 16, patch_size=16, init_values=1e-5),
    # TRIDENT's timm_kwargs for MahmoodLab/UNI2-h
    "uni_v2": ViTConfig(1536, 24, 24, patch_size=14, reg_tokens=8, no_embed_class=True, **_SWIGLU_G),
    # timm vit_huge_patch14_224 with SwiGLUPacked/SiLU, mlp_ratio 5.3375, global_pool '' (Virchow's card)
    "virchow": ViTConfig(1280, 32, 16, patch_size=14, mlp_ratio=5.3375, mlp="swiglu_packed", init_values=1e-5,
                         output="cls_mean"),
    "virchow2": ViTConfig(1280, 32, 16, patch_size=14, mlp_ratio=5.3375, mlp="swiglu_packed", init_values=1e-5,
                          reg_tokens=4, output="cls_mean"),
    # timm vit_giant_patch14_reg4_dinov2 at img_size 224 (the hub config.json of H-optimus-0/1)
    "hoptimus0": ViTConfig(1536, 40, 24, patch_size=14, reg_tokens=4, no_embed_class=True, **_SWIGLU_G),
    # timm vit_giant_patch14_dinov2 with patch_size 16, mlp_ratio 5.33334, img_size 224 (GigaPath's hub config)
    "gigapath": ViTConfig(1536, 40, 24, patch_size=16, mlp_ratio=5.33334, mlp="swiglu_packed", init_values=1e-5),
    # timm vit_small/base_patch{16,8}_224 (DINO); kaiko's ViT-L/14 is vit_large_patch14_reg4_dinov2 at 518 px
    "kaiko-vits16": ViTConfig(384, 12, 6, patch_size=16),
    "kaiko-vits8": ViTConfig(384, 12, 6, patch_size=8),
    "kaiko-vitb16": ViTConfig(768, 12, 12, patch_size=16),
    "kaiko-vitb8": ViTConfig(768, 12, 12, patch_size=8),
    "kaiko-vitl14": ViTConfig(1024, 24, 16, patch_size=14, img_size=518, init_values=1e-5, reg_tokens=4,
                              no_embed_class=True),
    "lunit-vits8": ViTConfig(384, 12, 6, patch_size=8),
}
VIT_CONFIGS["hoptimus1"] = VIT_CONFIGS["hoptimus0"]


def _vit(name: str):
    def build():
        from tessera.pathology.encoders.vit import VisionTransformer

        return VisionTransformer(VIT_CONFIGS[name])

    return build


def _hipt256():
    from tessera.pathology.encoders.hipt import hipt_vit256

    return hipt_vit256()


def _hipt4k():
    from tessera.pathology.encoders.hipt import hipt_vit4k

    return hipt_vit4k()


def _phikon():
    from tessera.pathology.encoders.hf import PHIKON_CONFIG, vit_model

    return vit_model(PHIKON_CONFIG)


def _phikon_v2():
    from tessera.pathology.encoders.hf import PHIKON_V2_CONFIG, dinov2_model

    return dinov2_model(PHIKON_V2_CONFIG)


def _conch_v15():
    from tessera.pathology.encoders import conch

    return conch.ConchV15(conch.CONCH_V15_TRUNK)


def _conch_v1():
    from tessera.pathology.encoders import conch

    return conch.ConchV1(conch.CONCH_V1_TRUNK)


def _resize_trunk_pos_embed(state, model):
    from tessera.pathology.encoders.conch import resize_trunk_pos_embed

    return resize_trunk_pos_embed(state, model)


def _timm_file(files: str, licence: str, gated: str) -> Checkpoint:
    return Checkpoint(files=files, licence=licence, gated=gated)


DINO_HEAD = ("head.",)  # DINO's projection head, in HIPT's training checkpoints

SPECS = [
    EncoderSpec("hipt256", "patch", 384, _hipt256, patch_px=256, mean=HALF[0], std=HALF[1], n_params=21_665_664,
                checkpoint=Checkpoint("vit256_small_dino.pth (DINO checkpoint: teacher.backbone.*)", ignore=DINO_HEAD,
                                      licence="Apache-2.0 with Commons Clause (mahmoodlab/HIPT)", gated="")),
    EncoderSpec("hipt4k", "region", 192, _hipt4k, patch_encoder="hipt256", output="CLS token of the region's grid",
                n_params=2_781_504,
                checkpoint=Checkpoint("vit4k_xs_dino.pth (DINO checkpoint: teacher.backbone.*)", ignore=DINO_HEAD,
                                      licence="Apache-2.0 with Commons Clause (mahmoodlab/HIPT)", gated="")),
    EncoderSpec("uni_v1", "patch", 1024, _vit("uni_v1"), patch_px=256, transform=RESIZE_224, mean=IMAGENET[0],
                std=IMAGENET[1], n_params=303_350_784,
                checkpoint=_timm_file("pytorch_model.bin (MahmoodLab/UNI, timm keys)", CC_BY_NC_ND, HF_INSTITUTIONAL)),
    EncoderSpec("uni_v2", "patch", 1536, _vit("uni_v2"), patch_px=256, transform=RESIZE_224, mean=IMAGENET[0],
                std=IMAGENET[1], n_params=681_394_176,
                checkpoint=_timm_file("pytorch_model.bin (MahmoodLab/UNI2-h, timm keys)", CC_BY_NC_ND,
                                      HF_INSTITUTIONAL)),
    EncoderSpec("virchow", "patch", 2560, _vit("virchow"), patch_px=224,
                transform=TileTransform(resize=224, interpolation="bicubic"), mean=IMAGENET[0], std=IMAGENET[1],
                output="CLS ⊕ mean of the patch tokens", n_params=631_229_184,
                checkpoint=_timm_file("pytorch_model.bin or model.safetensors (paige-ai/Virchow, timm keys)",
                                      "Apache-2.0", HF_INSTITUTIONAL)),
    EncoderSpec("virchow2", "patch", 2560, _vit("virchow2"), patch_px=224,
                transform=TileTransform(resize=224, interpolation="bicubic"), mean=IMAGENET[0], std=IMAGENET[1],
                output="CLS ⊕ mean of the patch tokens (registers excluded)", n_params=631_239_424,
                checkpoint=_timm_file("pytorch_model.bin or model.safetensors (paige-ai/Virchow2, timm keys)",
                                      CC_BY_NC_ND, HF_INSTITUTIONAL)),
    *(EncoderSpec(name, "patch", 1536, _vit(name), patch_px=224, transform=TileTransform(resize=224),
                  mean=HOPTIMUS[0], std=HOPTIMUS[1], n_params=1_134_774_272,
                  checkpoint=_timm_file(f"pytorch_model.bin or model.safetensors (bioptimus/{repo}, timm keys)",
                                        licence, gate))
      for name, repo, licence, gate in (
          ("hoptimus0", "H-optimus-0", "Apache-2.0", HF_ACCEPT),
          ("hoptimus1", "H-optimus-1", "non-commercial research terms of the model card", HF_INSTITUTIONAL))),
    EncoderSpec("gigapath", "patch", 1536, _vit("gigapath"), patch_px=256,
                transform=TileTransform(resize=256, interpolation="bicubic", crop=224), mean=IMAGENET[0],
                std=IMAGENET[1], n_params=1_134_953_984,
                checkpoint=_timm_file("pytorch_model.bin (prov-gigapath/prov-gigapath tile encoder, timm keys)",
                                      "Apache-2.0 (research use only)", HF_ACCEPT)),
    EncoderSpec("phikon", "patch", 768, _phikon, patch_px=224, transform=TileTransform(resize=224),
                mean=IMAGENET[0], std=IMAGENET[1], n_params=85_798_656,
                output="CLS of last_hidden_state (after the final LayerNorm)",
                checkpoint=Checkpoint("directory with config.json + model.safetensors or pytorch_model.bin "
                                      "(owkin/phikon, transformers ViTModel)", layout="hf_dir:vit", ignore=("pooler.",),
                                      licence="Owkin non-commercial licence (other)",
                                      gated="")),
    EncoderSpec("phikon_v2", "patch", 1024, _phikon_v2, patch_px=224, transform=TileTransform(resize=224, crop=224),
                mean=IMAGENET[0], std=IMAGENET[1], n_params=303_351_808,
                output="CLS of last_hidden_state (after the final LayerNorm)",
                checkpoint=Checkpoint("directory with config.json + model.safetensors (owkin/phikon-v2, "
                                      "transformers Dinov2Model)", layout="hf_dir:dinov2",
                                      licence="Owkin non-commercial licence (other)", gated="")),
    EncoderSpec("conch_v15", "patch", 768, _conch_v15, patch_px=512,
                transform=TileTransform(resize=448, interpolation="bilinear", crop=448), mean=IMAGENET[0],
                std=IMAGENET[1], n_params=306_109_184, output="attentional pooler (1 query) + LayerNorm",
                checkpoint=Checkpoint("pytorch_model_vision.bin (MahmoodLab/conchv1_5: trunk.*, "
                                      "attn_pool_contrast.*, ln_contrast.*)", adapt=_resize_trunk_pos_embed,
                                      licence=CC_BY_NC_ND, gated=HF_INSTITUTIONAL)),
    EncoderSpec("conch_v1", "patch", 512, _conch_v1, patch_px=512,
                transform=TileTransform(resize=448, interpolation="bicubic", crop=448), mean=OPENAI_CLIP[0],
                std=OPENAI_CLIP[1], output="encode_image(proj_contrast=False, normalize=False)", n_params=87_567_104,
                checkpoint=Checkpoint("pytorch_model.bin (MahmoodLab/CONCH: the whole CoCa model; visual.* used)",
                                      select="visual.",
                                      ignore=("attn_pool_caption.", "ln_caption.", "proj_contrast"),
                                      adapt=_resize_trunk_pos_embed, licence=CC_BY_NC_ND, gated=HF_INSTITUTIONAL)),
    *(EncoderSpec(f"kaiko-{arch}", "patch", VIT_CONFIGS[f"kaiko-{arch}"].embed_dim, _vit(f"kaiko-{arch}"),
                  patch_px=256, transform=RESIZE_224, mean=HALF[0], std=HALF[1], n_params=n,
                  checkpoint=_timm_file(f"model.safetensors (kaiko-ai towards_large_pathology_fms {arch}, timm keys)",
                                        "Apache-2.0", ""))
      for arch, n in (("vits16", 21_665_664), ("vits8", 21_670_272), ("vitb16", 85_798_656),
                      ("vitb8", 85_807_872), ("vitl14", 304_370_688))),
    EncoderSpec("lunit-vits8", "patch", 384, _vit("lunit-vits8"), patch_px=224, mean=LUNIT[0], std=LUNIT[1],
                n_params=21_670_272,
                checkpoint=_timm_file("dino_vit_small_patch8_ep200.torch or model.safetensors (Lunit DINO ViT-S/8, "
                                      "timm keys)", "Lunit non-commercial licence", "")),
]

for _spec in SPECS:
    register(_spec)


def reduced(config: ViTConfig, depth: int = 2) -> ViTConfig:
    """The same architecture with fewer blocks (tests and CPU benchmarks)."""
    return replace(config, depth=depth)
