"""slony-migrate: move a live PostgreSQL database to another server with Slony-I.

Kept free of side effects: Fabric's own loader imports a package named ``fabfile``.
"""
