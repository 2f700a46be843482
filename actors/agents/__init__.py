"""One module per agent type. Each registers its workflow with ``actors.catalogue.workflow``."""
