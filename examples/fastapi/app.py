"""A small user service, written the way any FastAPI app is: it stores and returns plaintext.

It knows nothing about encryption. Run it behind fieldseal (see README.md and run.sh) and
clients only ever see `fs1` tokens for the SSN, the password and card numbers, while this code
keeps reading and writing the real values.

    uvicorn app:app --port 8000
"""
import threading
from typing import Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class Card(BaseModel):
    brand: str
    number: str
    exp: str


class User(BaseModel):
    id: int
    name: str
    email: str
    phone: str = ""
    ssn: str = ""
    password: str
    cards: list[Card] = []


class UserIn(BaseModel):
    name: str
    email: str
    phone: str = ""
    ssn: str = ""
    password: str
    cards: list[Card] = []


class UserUpdate(BaseModel):
    name: Optional[str] = None
    email: Optional[str] = None
    phone: Optional[str] = None
    ssn: Optional[str] = None
    password: Optional[str] = None
    cards: Optional[list[Card]] = None


app = FastAPI(title="users")

_lock = threading.Lock()
_users: dict[int, User] = {
    1: User(id=1, name="Ada Lovelace", email="ada@example.com", phone="+44 20 7946 0018",
            ssn="078-05-1120", password="correct horse battery staple",
            cards=[Card(brand="visa", number="4111111111111111", exp="12/29")]),
    2: User(id=2, name="Alan Turing", email="alan@example.com", phone="+44 161 496 0754",
            ssn="219-09-9999", password="enigma-1912",
            cards=[Card(brand="mastercard", number="5555555555554444", exp="03/28"),
                   Card(brand="amex", number="378282246310005", exp="07/27")]),
}
_next_id = 3


class UserList(BaseModel):
    users: list[User]


@app.get("/api/users", response_model=UserList)
def list_users():
    with _lock:
        return UserList(users=list(_users.values()))


@app.get("/api/users/{user_id}", response_model=User)
def get_user(user_id: int):
    with _lock:
        if user_id not in _users:
            raise HTTPException(404, "no such user")
        return _users[user_id]


@app.put("/api/users/{user_id}", response_model=User)
def update_user(user_id: int, update: UserUpdate):
    with _lock:
        if user_id not in _users:
            raise HTTPException(404, "no such user")
        changes = update.model_dump(exclude_unset=True, exclude_none=True)
        merged = _users[user_id].model_dump() | changes
        _users[user_id] = User.model_validate(merged)
        return _users[user_id]


@app.post("/api/users", response_model=User, status_code=201)
def create_user(new: UserIn):
    global _next_id
    with _lock:
        user = User(id=_next_id, **new.model_dump())
        _users[_next_id] = user
        _next_id += 1
        return user
