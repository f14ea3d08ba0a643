# One image for every SegBoard service: the migration job, the web app, the reaper and the GPU workers.
# torch comes from requirements/torch.txt (CUDA-enabled wheels on Linux x86_64; they also run on a CPU).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    SEGBOARD_HOME=/var/lib/segboard

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgl1 libglib2.0-0 curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements/torch.txt requirements/torch.txt
RUN pip install -r requirements/torch.txt
COPY pyproject.toml README.md ./
COPY segcore segcore
COPY worker worker
COPY webapp webapp
RUN pip install '.[s3]' && useradd --create-home --uid 1000 segboard && mkdir -p /var/lib/segboard && chown segboard /var/lib/segboard

USER segboard
EXPOSE 8501
CMD ["segboard", "--help"]
