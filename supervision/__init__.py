"""OTP supervision for Pykka actors: supervisors, monitors, links, a registry, process actors."""
