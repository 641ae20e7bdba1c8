"""bridged: hands OCP bot chats over to human agents in Salesforce Live Agent."""

__all__ = ["__version__"]

__version__ = "0.1.0"
