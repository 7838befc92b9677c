"""Testing support: the pytest plugin (entry point ``pytest11``) and the helpers it is built on."""
