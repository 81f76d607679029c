# Base image of the defectcam Nuclio function: Python, torch (CPU or CUDA), defectcam, weights.
# Nuclio's build (function.yaml / function-gpu.yaml: build.baseImage) only adds its processor,
# the nuclio-sdk wrapper and the function files (main.py, model_handler.py) on top.
#
#   docker build -t defectcam-base:cpu --build-arg TORCH_VARIANT=cpu .
#   docker build -t defectcam-base:gpu --build-arg TORCH_VARIANT=cu128 .
#
# TORCH_VARIANT picks the wheel index at download.pytorch.org/whl/<variant>: the CUDA wheels
# bundle their CUDA runtime, so the host needs only the NVIDIA driver and container toolkit.
# NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES are set for the GPU function only, by
# function-gpu.yaml's build directives (this file builds the CPU image too).
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG WEIGHTS_DIR=weights

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEFECTCAM_WEIGHTS=/opt/defectcam/weights

# torch first, from the variant's index, so that installing the project keeps that build.
RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

WORKDIR /opt/defectcam/src
COPY pyproject.toml README.md ./
COPY defectcam ./defectcam
RUN pip install . && python -c "import defectcam.core.proposer, nuclio_sdk"

COPY ${WEIGHTS_DIR}/ /opt/defectcam/weights/
RUN python -c "from defectcam.core.weights import find_weights; print(sorted(find_weights('/opt/defectcam/weights')))"

WORKDIR /opt/nuclio
