def call_status_changed_receiver(signal, sender, **change):
    return None
