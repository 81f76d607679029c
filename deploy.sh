#!/usr/bin/env bash
# Deploy defectcam as a CVAT serverless (Nuclio) detector on this machine.
#
#   ./deploy.sh --cpu     build defectcam-base:cpu, deploy function.yaml      (defectcam-cpu)
#   ./deploy.sh --gpu     build defectcam-base:gpu, deploy function-gpu.yaml  (defectcam-gpu)
#   ./deploy.sh --cpu --interactors   the same base image, then the three click interactors
#                         interactors/{crack,spalling,rust}.yaml (defectcam-crack-click-cpu, ...)
#
# Needs docker, and nuctl of the same version as the Nuclio dashboard that CVAT's
# components/serverless/docker-compose.serverless.yml starts (--dry-run needs neither).
# Weights: weights/*.safetensors (each with its .json sidecar) next to this script.
#
# Like CVAT's serverless/deploy_cpu.sh and deploy_gpu.sh, the function joins CVAT's docker
# network (--platform-config '{"attributes":{"network":"cvat_cvat"}}'): CVAT's Nuclio
# dashboard invokes functions by container name ("x-nuclio-invoke-via: domain-name"), which
# resolves only on a shared network. CVAT_NETWORK names another network (a CVAT started under
# another compose project name: see "docker network ls"); CVAT_NETWORK=none leaves it out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLATFORM="local"

usage() {
    cat <<EOF
Usage: $(basename "$0") --cpu | --gpu [--interactors] [--dry-run]

  --cpu      deploy function.yaml (CPU torch, 2 workers)
  --gpu      deploy function-gpu.yaml (CUDA torch, 1 worker, one NVIDIA GPU)
  --interactors
             deploy the click interactors instead (AI Tools > Interactors), one per
             defect: interactors/<defect>.yaml (--cpu) or interactors/<defect>-gpu.yaml
  --dry-run  print the docker and nuctl commands instead of running them
             (docker and nuctl need not be installed)
  -h, --help show this help

Environment: TORCH_VARIANT overrides the torch wheel index (cpu, cu128, ...);
CVAT_NETWORK is CVAT's docker network (default cvat_cvat; none: do not attach).
EOF
}

die() {
    echo "deploy.sh: $*" >&2
    exit 1
}

MODE=""
DRY_RUN=0
INTERACTORS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE="cpu" ;;
        --gpu) MODE="gpu" ;;
        --dry-run) DRY_RUN=1 ;;
        --interactors) INTERACTORS=1 ;;
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
# What is deployed: the detector, or one interactor per defect (CVAT's interactor request
# carries no label: each defect answers as its own function).
if [ "$INTERACTORS" -eq 1 ]; then
    SUFFIX=""
    [ "$MODE" = "cpu" ] || SUFFIX="-$MODE"
    FUNCTION_FILES=()
    FUNCTION_NAMES=()
    for defect in crack spalling rust; do
        FUNCTION_FILES+=("interactors/${defect}${SUFFIX}.yaml")
        FUNCTION_NAMES+=("defectcam-${defect}-click-${MODE}")
    done
    ENTRY_FILES=(interactor_main.py)
else
    FUNCTION_FILES=("$FUNCTION_FILE")
    FUNCTION_NAMES=("$FUNCTION_NAME")
    ENTRY_FILES=(main.py model_handler.py)
fi
BASE_IMAGE="defectcam-base:${MODE}"
CVAT_NETWORK="${CVAT_NETWORK:-cvat_cvat}"

# Print a command so that it can be pasted into a shell: words with characters other than
# these are single-quoted. "$" stays bare so that the dry run's $STAGE expands when pasted.
# A real run marks its commands with "+ " (as set -x does); a dry run prints them bare, so
# that its output is a script.
PREFIX="+ "
[ "$DRY_RUN" -eq 0 ] || PREFIX=""
quote() {
    local word out="${PREFIX% }"
    local q="'"
    local plain='^[-A-Za-z0-9_./:=@%+,$]+$'
    for word in "$@"; do
        if [[ "$word" =~ $plain ]]; then
            out+=" $word"
        else
            out+=" $q${word//$q/$q\\$q$q}$q"
        fi
    done
    echo "${out# }"
}

# Print, then run (not on a dry run).
run() {
    quote "$@"
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

# The function's eventTimeout (a Go duration such as 600s). The hint's "nuctl invoke
# --timeout" uses it, so that a call by hand waits as long as the function may run.
event_timeout() {
    local line
    while IFS= read -r line; do
        if [[ "$line" =~ ^[[:space:]]+eventTimeout:[[:space:]]*([0-9]+(ms|s|m|h)) ]]; then
            echo "${BASH_REMATCH[1]}"
            return 0
        fi
    done <"$1"
    return 1
}

# A missing tool stops a deployment; a dry run only notes it.
need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        [ "$DRY_RUN" -eq 1 ] || die "$2"
        echo "deploy.sh: note: $1 is not on PATH (fine for --dry-run; needed to deploy)" >&2
    fi
}

# --- checks -----------------------------------------------------------------------------
need docker "docker not found: install Docker Engine (https://docs.docker.com/engine/install/)"
need nuctl "nuctl not found: download the nuctl release matching your CVAT's Nuclio dashboard \
(https://github.com/nuclio/nuclio/releases), make it executable and put it on PATH as nuctl"
if [ "$DRY_RUN" -eq 0 ]; then
    docker info >/dev/null 2>&1 ||
        die "cannot talk to the docker daemon: is it running, and may this user use it?"
    if [ "$CVAT_NETWORK" != "none" ]; then
        docker network inspect "$CVAT_NETWORK" >/dev/null 2>&1 ||
            die "docker network $CVAT_NETWORK not found: start CVAT with \
components/serverless/docker-compose.serverless.yml first, set CVAT_NETWORK to your CVAT's \
network (docker network ls), or CVAT_NETWORK=none to deploy without it"
    fi
fi
for file in Dockerfile "${ENTRY_FILES[@]}" "${FUNCTION_FILES[@]}"; do
    [ -f "$ROOT/$file" ] || die "$ROOT/$file is missing"
done
compgen -G "$ROOT/weights/*.safetensors" >/dev/null ||
    die "no weights: put <label>.safetensors and <label>.json files into $ROOT/weights/"
TIMEOUT="$(event_timeout "$ROOT/${FUNCTION_FILES[0]}")" ||
    die "${FUNCTION_FILES[0]} has no spec.eventTimeout"
PLATFORM_CONFIG=()
if [ "$CVAT_NETWORK" != "none" ]; then
    PLATFORM_CONFIG=(--platform-config "{\"attributes\":{\"network\":\"$CVAT_NETWORK\"}}")
fi

# --- base image -------------------------------------------------------------------------
run docker build --tag "$BASE_IMAGE" --build-arg "TORCH_VARIANT=$TORCH_VARIANT" "$ROOT"

# --- function ---------------------------------------------------------------------------
# Stage only the function files: Nuclio copies the whole --path into the image (from the
# repository root that would be the whole tree, .venv included).
if [ "$DRY_RUN" -eq 1 ]; then
    # Printed for pasting, where $STAGE expands: single quotes on purpose. No folder is
    # made here: the script that is printed makes it when it runs.
    # shellcheck disable=SC2016
    echo 'STAGE="$(mktemp -d "${TMPDIR:-/tmp}/defectcam-nuclio.XXXXXX")"'
    # shellcheck disable=SC2016
    STAGE='$STAGE'
else
    STAGE="$(mktemp -d "${TMPDIR:-/tmp}/defectcam-nuclio.XXXXXX")"
    trap 'rm -rf "$STAGE"' EXIT
    quote STAGE="$STAGE"
fi
STAGED=()
for file in "${ENTRY_FILES[@]}" "${FUNCTION_FILES[@]}"; do
    STAGED+=("$ROOT/$file")
done
run cp "${STAGED[@]}" "$STAGE/"

if [ "$DRY_RUN" -eq 1 ]; then
    echo "nuctl get project cvat --platform $PLATFORM >/dev/null 2>&1 ||"
    echo "    nuctl create project cvat --platform $PLATFORM"
elif ! nuctl get project cvat --platform "$PLATFORM" >/dev/null 2>&1; then
    run nuctl create project cvat --platform "$PLATFORM"
fi
run cd "$STAGE"
for file in "${FUNCTION_FILES[@]}"; do
    run nuctl deploy --project-name cvat --path . --file "${file##*/}" --platform "$PLATFORM" \
        "${PLATFORM_CONFIG[@]}"
done
run nuctl get function --platform "$PLATFORM"

# After the commands, how to call the function by hand. A dry run's output is a script, so
# there these lines are comments.
hint() {
    if [ "$DRY_RUN" -eq 1 ]; then
        local line
        while IFS= read -r line; do
            if [ -n "$line" ]; then echo "# $line"; else echo "#"; fi
        done
    else
        cat
    fi
}
echo
if [ "$INTERACTORS" -eq 1 ]; then
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "Dry run: nothing was built or deployed; without --dry-run, deploy.sh runs the"
        echo "commands above. Once deployed, call an interactor by hand (body on stdin):"
    else
        echo "Deployed ${FUNCTION_NAMES[*]}. CVAT lists them under AI Tools > Interactors"
        echo "(\"defectcam crack (click)\", ...): pick the one of the label you annotate."
        echo "Call one by hand (the JSON body goes on stdin):"
    fi
    cat <<EOF

  python3 -c 'import base64, json, sys; print(json.dumps({"image": base64.b64encode(open(sys.argv[1], "rb").read()).decode(), "pos_points": [[float(sys.argv[2]), float(sys.argv[3])]], "neg_points": []}))' photo.jpg X Y > click.json
  nuctl invoke ${FUNCTION_NAMES[0]} --platform ${PLATFORM} --method POST \\
    --content-type application/json --timeout ${TIMEOUT} < click.json

It answers {"mask": rows of 0/1, "bounds": [x1, y1, x2, y2], "points": [[x, y], ...]}.
Logs: docker logs nuclio-nuclio-${FUNCTION_NAMES[0]}
EOF
    exit 0
fi
if [ "$DRY_RUN" -eq 1 ]; then
    echo "# Dry run: nothing was built or deployed; without --dry-run, deploy.sh runs the"
    echo "# commands above. Once ${FUNCTION_NAME} is deployed, call it by hand (body on stdin):"
else
    echo "Deployed ${FUNCTION_NAME}. CVAT lists it under Models; run it from a task's Actions >"
    echo "Automatic annotation. Call it by hand (the JSON body goes on stdin):"
fi
hint <<EOF

  python3 -c 'import base64, json, sys; print(json.dumps({"image": base64.b64encode(open(sys.argv[1], "rb").read()).decode(), "threshold": 0.5}))' photo.jpg > body.json
  nuctl invoke ${FUNCTION_NAME} --platform ${PLATFORM} --method POST \\
    --content-type application/json --timeout ${TIMEOUT} < body.json
  # or, with the port that "nuctl get function" shows:
  curl -s -X POST -H 'Content-Type: application/json' --data-binary @body.json http://localhost:PORT

--timeout ${TIMEOUT} is ${FUNCTION_FILE}'s eventTimeout, the longest one frame may take
(nuctl waits 1m by default). Optional keys: "iterations" (AdvCAM steps), "labels" (e.g.
["crack"]), "output" ("polygon" or "mask"), "cam_threshold".
Logs: docker logs nuclio-nuclio-${FUNCTION_NAME}
EOF
