"""Interlock on this machine: the local stack (`interlock up`), the sandbox command and what runs
offline. It starts services and the sandbox as processes; clients/ never imports it."""
