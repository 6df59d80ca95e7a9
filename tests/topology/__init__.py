"""knd topology: GPU <-> NIC affinity from sysfs fixture trees."""
