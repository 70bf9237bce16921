"""thawkit: fine-tune pretrained image CNNs on your own image folders, strategy done right."""

__version__ = "0.1.0"
