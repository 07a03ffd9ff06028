"""The applications of a trained GAN: editing real images through an encoder (editing) and the study of GAN
samples as extra training data for a classifier (augment_study). They sit above the training engine."""
