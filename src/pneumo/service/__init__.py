"""The web service (`pneumo serve`): FastAPI app and its page. Needs the `serve` extra."""
