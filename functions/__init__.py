"""One blueprint module per capability: parse the trigger, call shared/, hand the result on."""
