"""The one error of the metrics: raised by the classifier, the backbones, FID and the other scores alike."""


class FIDError(ValueError):
    """FID cannot be computed as configured (missing weights, package, or bad inputs): the CLI's one-line error."""
