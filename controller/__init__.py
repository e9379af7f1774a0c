"""Fleet controller: ingests alerts over MQTT, decides fleet-wide rules, signs and pushes them."""
