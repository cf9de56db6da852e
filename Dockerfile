# CountyRead GPU image: CUDA runtime + cuDNN for onnxruntime-gpu; runs on CPU when no GPU.
# Build: docker build -t countyread .
# Run:   docker run --gpus all -p 11112:11112 -p 8000:8000 -v /srv/countyread:/data countyread
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COUNTYREAD_DATA_DIR=/data \
    COUNTYREAD_API_HOST=0.0.0.0

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
      fonts-noto-cjk dcmtk tini \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY countyread ./countyread
COPY dicom_node ./dicom_node
COPY inference ./inference
COPY models ./models
COPY api ./api
COPY training ./training
RUN pip install --no-cache-dir ".[postgres,celery]"

RUN useradd --system --home /data countyread && mkdir -p /data && chown countyread /data
USER countyread
VOLUME ["/data"]
EXPOSE 11112 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python3 -c "import urllib.request,sys; \
  sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status == 200 else 1)"
ENTRYPOINT ["tini", "--", "countyread"]
CMD ["serve"]
