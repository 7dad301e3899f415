FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir .
ENTRYPOINT []
