"""Action: the primary filter (rule table), kernel enforcement and the responder that feeds them."""
