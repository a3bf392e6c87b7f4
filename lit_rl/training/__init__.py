"""LightningModules that train and fine-tune policies."""
