"""The registry's token service: an implementation of the Docker registry token specification.

``GET /token`` (Basic credentials, one or more ``scope`` parameters each possibly a space-separated
list, ``offline_token``) and ``POST /token`` (the OAuth2 form ``docker login`` uses, ``password`` and
``refresh_token`` grants) answer with an ES256 JWT the registry verifies against the published key.
Robots authenticate with bcrypt hashes read from Vault, developers with their company OIDC token;
rules decide what each role may do. See docs/token-service.md.

Run: ``python -m token_service`` (settings from the environment: ``token_service.contract.SETTINGS``).
"""
