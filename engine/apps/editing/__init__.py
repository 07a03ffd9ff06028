"""Editing real images with a conditional generator: encode -> edit -> decode.

Encode: find z with G(z, y) close to a real image x of class (or attributes) y. A VAE-GAN's own encoder (trained
with G, in the checkpoint) or an encoder network trained on G afterwards (saved beside the checkpoint as
encoder.pt) gives a first guess; a per-image optimisation of a pixel + classifier-feature loss refines it (alone,
it starts from the best of a few random codes).
Edit: decode the same z with another class (the same handwriting as another digit) or other attribute values, or
move z along a direction in which a handwriting measure (stroke thickness, slant) grows.

    inputs           EditError; the conditional generator and the images an edit works on, checked
    outputs          what an edit writes: edit_grid.png and edit.json
    digit_measures   stroke thickness and slant, measured on the images themselves
    encoder          the encoder network, its training and file, and encode / decode (codes <-> images)
    codes            a VAE-GAN's round trip as files: images -> codes.npz -> images
    class_edits      a class-conditional model's edits and what they keep (the edit study)
    attribute_edits  an attribute-conditioned model's edits, read by its own critic
    edit             the edit command: class or attribute edits, as the model was trained
"""
