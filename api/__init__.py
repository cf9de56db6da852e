"""FastAPI worklist, review, reports and the radiologist web page."""
