"""wardready: is every ward office ready for the city's shared platforms, and if not, what is
missing. One package, in layers that import only downward:

    wardready.core    config loading, errors, inventory schema, metric definitions, wire formats
    wardready.checks  the probes (the repository's checks/)
    wardready.model   the report, the readiness verdict, the shortfall criteria
    wardready.agent   the ward agent (agent/)       wardready.server  the central service (server/)
"""

__version__ = "0.1.0"
