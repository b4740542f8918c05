"""Load testing for the gateway: Locust users for operators, a fan-out benchmark for the team."""
