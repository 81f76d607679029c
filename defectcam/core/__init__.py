"""The library: a photo in, defect proposals out (model, Grad-CAM/AdvCAM, tiling,
post-processing, proposer, weights, CVAT formats, image input). The applications around it
(the faces, training, data, evaluation, feedback) live beside this package."""
