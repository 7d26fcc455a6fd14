"""Every test runs with the box's pynetdicom settings, as `app.Box` applies them (peers
and parts of the box that tests build alone included)."""

from appliance import dimse

dimse.configure()
