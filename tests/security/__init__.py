"""Security properties: no pickle, least-privilege Redis users, TLS URLs, the task allow-list."""
