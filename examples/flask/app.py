"""A small user service, written the way any Flask app is: it stores and returns plaintext.

It knows nothing about encryption. Run it behind fieldseal (see README.md and run.sh) and
clients only ever see `fs1` tokens for the SSN, the password and card numbers, while this code
keeps reading and writing the real values.

    flask --app app run --port 8000
"""
import copy
import threading

from flask import Flask, abort, jsonify, request

app = Flask(__name__)

_lock = threading.Lock()
_users: dict[int, dict] = {
    1: {
        "id": 1,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0018",
        "ssn": "078-05-1120",
        "password": "correct horse battery staple",
        "cards": [{"brand": "visa", "number": "4111111111111111", "exp": "12/29"}],
    },
    2: {
        "id": 2,
        "name": "Alan Turing",
        "email": "alan@example.com",
        "phone": "+44 161 496 0754",
        "ssn": "219-09-9999",
        "password": "enigma-1912",
        "cards": [
            {"brand": "mastercard", "number": "5555555555554444", "exp": "03/28"},
            {"brand": "amex", "number": "378282246310005", "exp": "07/27"},
        ],
    },
}
_next_id = 3

# The fields a client may set, and their types.
FIELDS = {"name": str, "email": str, "phone": str, "ssn": str, "password": str, "cards": list}
CARD_FIELDS = {"brand": str, "number": str, "exp": str}


def _error(status: int, message: str):
    return jsonify({"error": message}), status


def _validated(body, required=()):
    """The known fields of `body`, type-checked; raises ValueError with a message."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    missing = [f for f in required if f not in body]
    if missing:
        raise ValueError(f"missing fields: {', '.join(missing)}")
    update = {}
    for field, kind in FIELDS.items():
        if field not in body:
            continue
        value = body[field]
        if not isinstance(value, kind):
            raise ValueError(f"{field} must be a {kind.__name__}")
        if field == "cards":
            cards = []
            for card in value:
                if not isinstance(card, dict) or not all(
                    isinstance(card.get(k), t) for k, t in CARD_FIELDS.items()
                ):
                    raise ValueError("each card needs brand, number and exp (strings)")
                cards.append({k: card[k] for k in CARD_FIELDS})
            value = cards
        update[field] = value
    return update


@app.get("/api/users")
def list_users():
    with _lock:
        return jsonify({"users": [copy.deepcopy(u) for u in _users.values()]})


@app.get("/api/users/<int:user_id>")
def get_user(user_id: int):
    with _lock:
        user = _users.get(user_id)
        if user is None:
            abort(404)
        return jsonify(copy.deepcopy(user))


@app.put("/api/users/<int:user_id>")
def update_user(user_id: int):
    try:
        update = _validated(request.get_json(silent=True))
    except ValueError as e:
        return _error(400, str(e))
    with _lock:
        user = _users.get(user_id)
        if user is None:
            abort(404)
        user.update(update)
        return jsonify(copy.deepcopy(user))


@app.post("/api/users")
def create_user():
    global _next_id
    try:
        fields = _validated(request.get_json(silent=True), required=("name", "email", "password"))
    except ValueError as e:
        return _error(400, str(e))
    with _lock:
        user = {"id": _next_id, "phone": "", "ssn": "", "cards": [], **fields}
        _users[_next_id] = user
        _next_id += 1
        return jsonify(copy.deepcopy(user)), 201


@app.errorhandler(404)
def not_found(_):
    return _error(404, "not found")
