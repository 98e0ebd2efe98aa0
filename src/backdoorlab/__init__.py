"""backdoorlab: plant, measure, detect and remove backdoors in neural networks."""

__version__ = "0.1.0"
