"""The slide stage: open slides, find tissue, lay out patch and region grids, draw QC thumbnails."""
