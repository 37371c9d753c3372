use super::*;

#[test]
fn only_a_whole_key_update_is_taken() {
    assert_eq!(key_update(&[KEY_UPDATE, 0, 0, 1, 0]), Ok(false));
    assert_eq!(key_update(&[KEY_UPDATE, 0, 0, 1, 1]), Ok(true));
    assert_eq!(key_update(&[KEY_UPDATE, 0, 0, 1, 2]), Err(AlertDescription::IllegalParameter));
    // Cut short, or followed by more in the same record (a key change must end its record).
    assert_eq!(key_update(&[KEY_UPDATE, 0, 0, 1]), Err(AlertDescription::DecodeError));
    assert_eq!(key_update(&[KEY_UPDATE, 0, 0, 1, 0, 24]), Err(AlertDescription::DecodeError));
    // A client's NewSessionTicket, Certificate or anything else after the handshake.
    assert_eq!(key_update(&[4, 0, 0, 0]), Err(AlertDescription::UnexpectedMessage));
    assert_eq!(key_update(&[]), Err(AlertDescription::UnexpectedMessage));
}

#[test]
fn alerts_end_the_session_but_user_canceled() {
    assert_eq!(alert(&[1, 0]), Ok(Some(End::PeerClosed)));
    assert_eq!(alert(&[1, 90]), Ok(None));
    // A warning level does not make another alert less fatal in TLS 1.3.
    assert_eq!(alert(&[1, 20]), Ok(Some(End::PeerAlert(AlertDescription::BadRecordMac))));
    assert_eq!(alert(&[2, 40]), Ok(Some(End::PeerAlert(AlertDescription::HandshakeFailure))));
    assert_eq!(alert(&[2]), Err(AlertDescription::DecodeError));
    assert_eq!(alert(&[2, 0, 0]), Err(AlertDescription::DecodeError));
}
