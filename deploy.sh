#!/usr/bin/env bash
# Deploy defectcam as a CVAT serverless (Nuclio) detector on this machine.
#
#   ./deploy.sh --cpu     build defectcam-base:cpu, deploy function.yaml      (defectcam-cpu)
#   ./deploy.sh --gpu     build defectcam-base:gpu, deploy function-gpu.yaml  (defectcam-gpu)
#
# Needs docker, and nuctl of the same version as the Nuclio dashboard that CVAT's
# components/serverless/docker-compose.serverless.yml starts. Weights: weights/*.safetensors
# (each with its .json sidecar) next to this script.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLATFORM="local"

usage() {
    cat <<EOF
Usage: $(basename "$0") --cpu | --gpu [--dry-run]

  --cpu      deploy function.yaml (CPU torch, 2 workers)
  --gpu      deploy function-gpu.yaml (CUDA torch, 1 worker, one NVIDIA GPU)
  --dry-run  print the docker and nuctl commands instead of running them
  -h, --help show this help

Environment: TORCH_VARIANT overrides the torch wheel index (cpu, cu128, ...).
EOF
}

die() {
    echo "deploy.sh: $*" >&2
    exit 1
}

MODE=""
DRY_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE="cpu" ;;
        --gpu) MODE="gpu" ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
    shift
done
[ -n "$MODE" ] || {
    usage >&2
    die "choose --cpu or --gpu"
}

if [ "$MODE" = "gpu" ]; then
    FUNCTION_FILE="function-gpu.yaml"
    FUNCTION_NAME="defectcam-gpu"
    DEFAULT_VARIANT="cu128"
else
    FUNCTION_FILE="function.yaml"
    FUNCTION_NAME="defectcam-cpu"
    DEFAULT_VARIANT="cpu"
fi
TORCH_VARIANT="${TORCH_VARIANT:-$DEFAULT_VARIANT}"
BASE_IMAGE="defectcam-base:${MODE}"

run() {
    echo "+ $*"
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

# --- checks -----------------------------------------------------------------------------
command -v docker >/dev/null 2>&1 ||
    die "docker not found: install Docker Engine (https://docs.docker.com/engine/install/)"
command -v nuctl >/dev/null 2>&1 ||
    die "nuctl not found: download the nuctl release matching your CVAT's Nuclio dashboard \
(https://github.com/nuclio/nuclio/releases), make it executable and put it on PATH as nuctl"
if [ "$DRY_RUN" -eq 0 ]; then
    docker info >/dev/null 2>&1 ||
        die "cannot talk to the docker daemon: is it running, and may this user use it?"
fi
for file in Dockerfile main.py model_handler.py "$FUNCTION_FILE"; do
    [ -f "$ROOT/$file" ] || die "$ROOT/$file is missing"
done
compgen -G "$ROOT/weights/*.safetensors" >/dev/null ||
    die "no weights: put <label>.safetensors and <label>.json files into $ROOT/weights/"

# --- base image -------------------------------------------------------------------------
run docker build --tag "$BASE_IMAGE" --build-arg "TORCH_VARIANT=$TORCH_VARIANT" "$ROOT"

# --- function ---------------------------------------------------------------------------
# Stage only the function files: Nuclio copies the whole --path into the image.
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/defectcam-nuclio.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
cp "$ROOT/main.py" "$ROOT/model_handler.py" "$ROOT/$FUNCTION_FILE" "$STAGE/"

if [ "$DRY_RUN" -eq 1 ] || ! nuctl get project cvat --platform "$PLATFORM" >/dev/null 2>&1; then
    run nuctl create project cvat --platform "$PLATFORM"
fi
cd "$STAGE"
run nuctl deploy --project-name cvat --path . --file "$FUNCTION_FILE" --platform "$PLATFORM"
run nuctl get function --platform "$PLATFORM"

cat <<EOF

Deployed ${FUNCTION_NAME}. CVAT lists it under Models; run it from a task's Actions >
Automatic annotation. Call it by hand (the JSON body goes on stdin):

  python3 -c 'import base64, json, sys; print(json.dumps({"image": base64.b64encode(open(sys.argv[1], "rb").read()).decode(), "threshold": 0.5}))' photo.jpg > body.json
  nuctl invoke ${FUNCTION_NAME} --platform ${PLATFORM} --method POST \\
    --content-type application/json --timeout 10m < body.json
  # or, with the port that "nuctl get function" shows:
  curl -s -X POST -H 'Content-Type: application/json' --data-binary @body.json http://localhost:PORT

Optional keys: "iterations" (AdvCAM steps), "labels" (e.g. ["crack"]), "output" ("polygon" or
"mask"), "cam_threshold". Logs: docker logs nuclio-nuclio-${FUNCTION_NAME}
EOF
