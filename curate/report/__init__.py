"""`curate report`: one HTML page of what every stage did."""
