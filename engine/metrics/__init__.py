"""Measuring generators. Below the training loop, which scores with them.

    errors            FIDError, the metrics' one error
    classifier        the embedded digit classifier (weights in assets/) and the class shares / accuracy it reads
    backbones         the feature extractors every metric reads: the digit classifier's features or Inception-v3
    fid               FID: the Frechet distance and a scorer that caches the real set's features
    scores            every other metric (KID, IS, precision/recall, density/coverage, MiFID, intra-FID, pixels)
    evaluate          the reference sets, end-of-run and checkpoint scores, mode coverage, FID during training
    train_classifier  the script that trains the digit classifier whose weights ship in assets/
"""
