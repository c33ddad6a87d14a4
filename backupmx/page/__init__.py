"""The status page on admin_listen: its model, its login and its forms."""
