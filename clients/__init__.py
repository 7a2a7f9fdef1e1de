"""The ClientApp (clients.app:app): one institution's node."""
