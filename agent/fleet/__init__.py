"""Fleet link: the MQTT client, the durable alert queue and the FleetLink that applies updates."""
