"""Training commands (composition root): data loading and caching, augmentation, loops."""
