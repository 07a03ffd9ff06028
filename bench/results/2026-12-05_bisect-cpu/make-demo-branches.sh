#!/bin/sh
# The two demonstration branches of this record, on top of ac140fc in a throw-away clone
# (run inside the clone; the shas differ from the record's: author and date are part of a commit).
set -e
c() { git commit -q -am "$1"; }

git checkout -q -b counts-demo ac140fc
sed -i '1s/^/# Fused layers: a linear or convolution with its bias, activation and norm in one module.\n/' models/layers.py; c "layers: a one-line summary comment at the top"
sed -i 's/^def mlp_feature_layers/# shared by the critic and the VAE-GAN encoder\ndef mlp_feature_layers/' models/mlp.py; c "mlp: say who shares mlp_feature_layers"
git apply planted-count.diff; c "mlp generator: return a fresh tensor"
sed -i '1s/^/# DCGAN: strided convolutions up (G) and down (D), BatchNorm in G.\n/' models/dcgan.py; c "dcgan: a one-line summary comment at the top"
sed -i '1s/^/# The critic heads: projection of class embeddings onto the features.\n/' models/critic.py; c "critic: a one-line summary comment at the top"
sed -i '1s/^/# Class and attribute embeddings for conditional generators and critics.\n/' models/conditioning.py; c "conditioning: a one-line summary comment at the top"

git checkout -q -b timed-demo ac140fc   # the 1024 x 1024 matmul
sed -i '1s/^/# Fused layers: a linear or convolution with its bias, activation and norm in one module.\n/' models/layers.py; c "layers: a one-line summary comment at the top"
sed -i '1s/^/# DCGAN: strided convolutions up (G) and down (D), BatchNorm in G.\n/' models/dcgan.py; c "dcgan: a one-line summary comment at the top"
sed -i 's/^def mlp_feature_layers/# shared by the critic and the VAE-GAN encoder\ndef mlp_feature_layers/' models/mlp.py; c "mlp: say who shares mlp_feature_layers"
git apply planted-slowdown-1024.diff; c "mlp generator: a mixing matrix warmed in every forward"
sed -i '1s/^/# The critic heads: projection of class embeddings onto the features.\n/' models/critic.py; c "critic: a one-line summary comment at the top"
sed -i '1s/^/# Class and attribute embeddings for conditional generators and critics.\n/' models/conditioning.py; c "conditioning: a one-line summary comment at the top"

# the same six commits with the smaller planted matmul (512 x 512)
git checkout -q -b timed-demo-512 ac140fc
sed -i '1s/^/# Fused layers: a linear or convolution with its bias, activation and norm in one module.\n/' models/layers.py; c "layers: a one-line summary comment at the top"
sed -i '1s/^/# DCGAN: strided convolutions up (G) and down (D), BatchNorm in G.\n/' models/dcgan.py; c "dcgan: a one-line summary comment at the top"
sed -i 's/^def mlp_feature_layers/# shared by the critic and the VAE-GAN encoder\ndef mlp_feature_layers/' models/mlp.py; c "mlp: say who shares mlp_feature_layers"
git apply planted-slowdown-512.diff; c "mlp generator: a mixing matrix warmed in every forward"
sed -i '1s/^/# The critic heads: projection of class embeddings onto the features.\n/' models/critic.py; c "critic: a one-line summary comment at the top"
sed -i '1s/^/# Class and attribute embeddings for conditional generators and critics.\n/' models/conditioning.py; c "conditioning: a one-line summary comment at the top"
