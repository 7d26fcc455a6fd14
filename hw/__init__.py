"""Hardware adapters (GPS, links, modem, hotplug, LED, console) behind the core's Protocols."""
