"""The Litestar web app: chat, uploads, follow-ups, grounded explanations."""
