"""crm-predict: settings, business rules and the command line that ties the packages together."""
