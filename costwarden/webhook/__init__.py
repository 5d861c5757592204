"""The Kubernetes admission webhook server (FastAPI on uvicorn)."""
