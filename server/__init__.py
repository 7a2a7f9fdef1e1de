"""The ServerApp (server.app:app) and its run record."""
