# The project image: the `classp` package with MLflow and optuna-dashboard, for the compose
# stack's tracking server, dashboard and workers. Everything is installed at build time;
# nothing is fetched at start-up.
#
#   docker build -t classp .                                  # CPU torch (default)
#   docker build -t classp:cuda --build-arg TORCH_VARIANT=cu128 .
FROM python:3.11-slim

# cpu, or the CUDA variant of the PyTorch wheel index (e.g. cu128) for GPU workers.
ARG TORCH_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 classp \
 && mkdir -p /mlartifacts /home/classp/.cache/classp/data \
 && chown -R classp:classp /mlartifacts /home/classp/.cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform ./platform
# torch and torchvision first, from the variant's wheel index; `pip install .` then keeps them.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch torchvision \
 && pip install . optuna-dashboard
COPY studies ./studies
COPY dashboards ./dashboards

USER classp
ENV CLASSP_HOME=/home/classp/.classp
CMD ["classp", "--help"]
