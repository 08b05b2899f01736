"""The curate service: FastAPI app (`api.app.create_app`), jobs, rounds, the Label Studio ML backend."""
