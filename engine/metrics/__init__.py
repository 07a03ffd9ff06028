"""Measuring generators: FID and the embedded digit classifier (fid), evaluation of samples and checkpoints
(evaluate), and the script that trains the classifier whose weights ship in assets/ (train_classifier). Below
the training loop, which scores with them."""
