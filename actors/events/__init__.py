"""Events: topics, subscriptions, the bus that stores and routes them, RabbitMQ's topic exchange."""
