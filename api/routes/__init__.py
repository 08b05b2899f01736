"""One APIRouter per resource; `api.app` includes them all (`ROUTERS`), the ML backend under `/ml`."""
