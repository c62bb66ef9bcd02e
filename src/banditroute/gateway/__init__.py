"""The OpenAI-compatible LLM gateway on the router service (docs/gateway.md).

``POST /v1/chat/completions`` turns a chat request into a routing context
(:mod:`~banditroute.gateway.features`), lets the service's :class:`~banditroute.service.router.Router`
choose an upstream among those the request's profile, budget (:mod:`~banditroute.gateway.budget`)
and circuit breakers (:mod:`~banditroute.gateway.breaker`) allow, calls it over aiohttp
(:mod:`~banditroute.gateway.upstream`), falls back on failure, and books usage × price
(:mod:`~banditroute.gateway.core`). Feedback goes through the service's ``POST /v1/feedback``, and
an optional reward hook (:mod:`~banditroute.gateway.reward_hook`) feeds a judge's rewards the same way.
"""
