"""Operations: the events a daemon publishes, the services that watch it (notifications,
metrics, daily summary), and the records it writes (trades CSV, logs)."""
