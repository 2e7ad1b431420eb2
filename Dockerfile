# The project image: the `classp` package with MLflow and optuna-dashboard, for the compose
# stack's tracking server, dashboard and workers. Everything is installed at build time;
# nothing is fetched at start-up.
#
#   docker build -t classp .                                    # CPU torch (default)
#   docker build -t classp:cuda --build-arg TORCH_VARIANT=cu128 .
#   docker build -t classp --build-arg TORCH_SOURCE=pypi .      # torch from PyPI
#   docker build -t classp --build-arg TORCH_SOURCE=wheels .    # torch from docker/wheels/
# Stage 1: torch and torchvision, installed into /usr/local (where the base image's Python
# lives). A separate stage so that local wheels never reach the final image.
FROM python:3.11-slim AS torch

# Where torch comes from: index (the PyTorch wheel index of TORCH_VARIANT), pypi (PyPI:
# for machines that reach only PyPI; its Linux torch is a CUDA build of several GB), or
# wheels (the wheel files in docker/wheels/, which git ignores; see its README).
ARG TORCH_SOURCE=index
# cpu, or the CUDA variant of the PyTorch wheel index (e.g. cu128) for GPU workers.
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/wheels /wheels
RUN case "$TORCH_SOURCE" in \
      index) pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch torchvision ;; \
      pypi) pip install torch torchvision ;; \
      wheels) set -- /wheels/torch-*.whl && pip install "$1" \
        && torch_version=$(python -c 'import torch; print(torch.__version__.split("+")[0])') \
        && pip install --find-links /wheels "torch==${torch_version}" torchvision \
        && { python -c 'import torchvision' 2>/dev/null \
             || echo "warning: torchvision does not import beside this torch: MNIST studies" \
                     "will fail in this image; put a matching torchvision wheel in docker/wheels/" >&2; } ;; \
      *) echo "TORCH_SOURCE must be index, pypi or wheels, got '${TORCH_SOURCE}'" >&2; exit 2 ;; \
    esac

# Stage 2: the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 classp \
 && mkdir -p /mlartifacts /home/classp/.cache/classp/data \
 && chown -R classp:classp /mlartifacts /home/classp/.cache

COPY --from=torch /usr/local /usr/local
WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform ./platform
# `pip install .` keeps the torch and torchvision of stage 1.
RUN pip install . optuna-dashboard
COPY studies ./studies
COPY dashboards ./dashboards

USER classp
ENV CLASSP_HOME=/home/classp/.classp
CMD ["classp", "--help"]
